"""The I/O edge to the monitors: the serial port and the device link that keeps it open and reconnects."""
