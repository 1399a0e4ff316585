"""The compiled kernel's codes, named once: what workflows/kernels.py hands
workflows/_block_kernel.py as plain integers (numba compiles them in as constants)."""

# The optimizer a block steps.
SGD, MOMENTUM, RMSPROP, ADAM, AMSGRAD, ADAGRAD, PRECOND = range(7)
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "rmsprop": RMSPROP, "adam": ADAM, "amsgrad": AMSGRAD,
                   "adagrad": ADAGRAD, "precond_sgd": PRECOND}
# The problem, and how escape is measured.
QUADRATIC, STAIB = range(2)
NORM, PROJECTION, COORDINATE = range(3)
# Per-step hyperparameter columns (one row per step of the block), in the dtype of the iterates.
LR, NEG_LR, STEP_SIZE, BIAS2_SQRT, BETA2, ONE_MINUS_BETA2 = range(6)
N_STEP_COLUMNS = 6
# The hyperparameters fixed for the whole cell.
BETA1, ONE_MINUS_BETA1, EPS, MU, NESTEROV, BIAS_CORRECTION, ONE, TEN = range(8)
