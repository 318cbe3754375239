from tspipe.doors.cli import entry

entry()
