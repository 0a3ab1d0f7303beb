"""Early stopping: the best epoch, progress by more than min_delta, patience."""

from __future__ import annotations

from model.detector import Detector
from model.train import EarlyStopping
from tests.conftest import TINY


def run(losses: list[float], patience: int = 3, min_gain: float = 10.0, warmup: int = 2):
    stopping = EarlyStopping(patience, min_gain, warmup)
    for epoch, loss in enumerate(losses, 1):
        stopping.update(epoch, loss)
        if stopping.should_stop(epoch):
            return epoch, stopping
    return len(losses), stopping


def test_small_gains_are_not_progress_but_the_best_epoch_is_kept():
    # after epoch 3 the loss creeps down by 2-3 nats an epoch, below min_gain = 10
    stopped, stopping = run([100.0, 50.0, 0.0, -2.0, -5.0, -7.0, -30.0])
    assert stopped == 6  # three epochs without progress after epoch 3
    assert (stopping.best_epoch, stopping.best_loss) == (6, -7.0)


def test_small_gains_add_up_to_progress():
    # -6 is not progress over 0, -12 is: patience counts from epoch 5
    stopped, stopping = run([100.0, 50.0, 0.0, -6.0, -12.0, -14.0, -15.0, -16.0, -40.0])
    assert stopped == 8
    assert stopping.progress_epoch == 5 and stopping.best_epoch == 8


def test_without_min_gain_every_improvement_is_progress():
    stopped, _ = run([100.0, 50.0, 0.0, -1.0, -2.0, -3.0, -4.0], min_gain=0.0)
    assert stopped == 7  # never stopped: ran out of epochs


def test_never_stops_within_warm_up():
    # the loss rises during warm-up (the KL weight grows): no stop before epoch warmup + 1
    stopped, stopping = run([0.0, 5.0, 10.0, 15.0, 20.0, 25.0], patience=1, warmup=4)
    assert stopped == 5 and stopping.best_epoch == 1


def test_training_stops_when_no_epoch_is_progress(synthetic):
    # a gain of 1e6 nats per value is never reached: only epoch 1 (from no loss at all)
    # is progress, so training stops once patience and the KL warm-up are both over
    config = TINY.replace(epochs=30, patience=2, kl_warmup_epochs=3, min_delta=1e6)
    meta = Detector.fit(synthetic.train, config).metadata
    assert meta["epochs_run"] == 4 and meta["stopped_early"]
    assert meta["best_epoch"] == min(
        range(1, 5), key=lambda e: meta["history"][e - 1]["val_loss"]
    )  # the best weights are still the lowest validation loss
