"""The floor every other layer may use: thread control, timing, the environment record, text and figure helpers.
Nothing here imports the rest of minigrad."""
