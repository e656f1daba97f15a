"""Training and evaluation: the step loop, optimiser and schedule, losses, model selection,
checkpoints, RNG state, distributed runs, evaluation, metrics, run logs and plots.

Nothing is imported here: ``import accel`` stays free of torch.distributed set-up, sklearn and
matplotlib; import the module you need (``from accel.train.engine import train_one_epoch``).
"""
