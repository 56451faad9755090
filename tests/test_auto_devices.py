"""devices_per_ticket="auto": the fewest devices per ticket whose share of the minibatch fits a
device, from XLA's memory analysis of the step compiled at each candidate's share."""

import pytest

from ltjax import memory, models
from ltjax.train import TrainSpec

MODEL = models.build("mlp", input_shape=(28, 28, 1), num_outputs=10)
SPEC = TrainSpec(optimizer="adam", lr=1e-3, batch_size=64, eval_every=20)


def test_picks_the_fewest_devices_whose_share_fits_and_says_when_none_does():
    total = {k: memory.ticket_memory(MODEL, SPEC._replace(batch_size=64 // k))["total"] for k in (1, 2, 4, 8)}
    assert total[1] > total[2] > total[4] > total[8]  # a smaller share of the batch needs less
    for k in (1, 2, 4, 8):  # a device just big enough for k's share (80% usable) gets k; a byte less, more
        assert memory.choose_devices_per_ticket(MODEL, SPEC, 8, memory=int(total[k] / 0.8) + 1) == k
        if k < 8:
            assert memory.choose_devices_per_ticket(MODEL, SPEC, 8, memory=int(total[k] / 0.8) - 1) > k
    assert memory.choose_devices_per_ticket(MODEL, SPEC, 4, memory=int(total[2] / 0.8) + 1, extra=0) == 2
    with pytest.raises(ValueError, match=r"even split over all 8 devices.*smaller batch_size"):
        memory.choose_devices_per_ticket(MODEL, SPEC, 8, memory=total[8] // 2)
    assert memory.device_memory() is None  # a CPU reports no limit: one device per ticket
    assert memory.choose_devices_per_ticket(MODEL, SPEC, 8) == 1


def test_lottery_run_auto_resolves_and_logs_its_choice(tmp_path, monkeypatch):
    from ltjax import lottery, presets

    cfg = presets.get("lenet_mnist_iclr2019").replace(widths=(16,), iterations=100, eval_every=100, rounds=1)
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 64 << 30)
    lines = []
    run = lottery.run(cfg, tmp_path, progress=False, log=lines.append, devices_per_ticket="auto")
    assert "devices_per_ticket=auto: 1 device(s) per ticket (of 1)" in lines
    assert len(run.rounds) == 1
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 1 << 10)
    from ltjax.config import ConfigError
    with pytest.raises(ConfigError, match="devices_per_ticket=auto: one ticket needs"):
        lottery.run(cfg, tmp_path / "small", progress=False, log=lines.append, devices_per_ticket="auto")
