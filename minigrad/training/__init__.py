"""Training: the loop (train.py), its schedules, and the one trial runner (trial.py) every command uses."""
