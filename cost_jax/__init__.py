"""CoST video recognition in JAX/Flax.

Importing the package first keeps the start-up logs of TensorFlow, XLA and JAX off the terminal
(`cli.quiet_startup`: TF_CPP_MIN_LOG_LEVEL=2 unless set, JAX's probing of platforms that are not
installed, TensorFlow Datasets' INFO lines); it runs before any command of cost_jax or data_prep
loads TensorFlow or JAX. `COST_JAX_VERBOSE=1` shows them.
"""

from cost_jax import cli as _cli

_cli.quiet_startup()
