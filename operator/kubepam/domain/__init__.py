"""Pure decisions: no I/O, no clients, no clock reads. Time is always passed in."""
