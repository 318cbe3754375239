from tspipe.cli import main

main()
