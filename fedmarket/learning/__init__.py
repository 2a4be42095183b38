"""What every node learns with: local data checked against a spec, training and evaluation.

The trainer trains with it, the coordinator and validators evaluate with it, so all of them read
data by one rule (shapes, dtypes, label range, ``feature_scale``) and measure by one metric::

    from fedmarket.learning import evaluate, load_local_data, train

    data = load_local_data("my_data.npz", spec)        # DataMismatchError says what does not fit
    result = train(model, data, spec.training, seed=1)
    print(evaluate(model, data).accuracy)

- :mod:`fedmarket.learning.data`: :func:`load_local_data` (NPZ or CSV file), :func:`parse_npz`
  (an upload in memory), :func:`check_local_data` (arrays);
- :mod:`fedmarket.learning.training`: :class:`LocalData`, :func:`train` (optionally DP-SGD),
  :func:`evaluate`, :func:`proximal_term` (FedProx). Plain PyTorch: no chain, store or HTTP.
"""

from fedmarket.errors import DataMismatchError
from fedmarket.learning.data import check_local_data, load_local_data, parse_npz
from fedmarket.learning.training import (
    EvalResult,
    LocalData,
    TrainResult,
    evaluate,
    make_optimizer,
    proximal_term,
    sample_losses,
    train,
)

__all__ = [
    "DataMismatchError",
    "EvalResult",
    "LocalData",
    "TrainResult",
    "check_local_data",
    "evaluate",
    "load_local_data",
    "make_optimizer",
    "parse_npz",
    "proximal_term",
    "sample_losses",
    "train",
]
