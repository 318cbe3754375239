from tspipe.doors.cli import main

main()
