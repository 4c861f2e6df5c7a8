"""`plan_step`: when a finished step logs, validates, saves and stops."""

import pytest

from cost_jax.training.loop import StepPlan, plan_step

SCHEDULE = dict(
  steps_per_epoch=10,
  total_steps=100,
  log_every_steps=4,
  eval_every_epochs=5,
  checkpoint_every_epochs=2,
)


def _plans(**overrides):
  options = dict(SCHEDULE, **overrides)
  return {done: plan_step(done, **options) for done in range(1, options['total_steps'] + 1)}


def test_logs_validates_and_saves_on_schedule():
  plans = _plans()
  assert [d for d, p in plans.items() if p.validate] == [50, 100]
  assert [d for d, p in plans.items() if p.save] == [20, 40, 50, 60, 80, 100]
  assert [d for d, p in plans.items() if p.log] == list(range(4, 101, 4))
  assert not any(p.stop for p in plans.values())
  assert plans[100] == StepPlan(log=True, validate=True, save=True, stop=False)


def test_every_validation_is_saved_and_the_last_step_validates():
  plans = _plans(total_steps=95, eval_every_epochs=3, checkpoint_every_epochs=4)
  assert [d for d, p in plans.items() if p.validate] == [30, 60, 90, 95]
  assert [d for d, p in plans.items() if p.save] == [30, 40, 60, 80, 90, 95]
  assert plans[95].log  # the last step logs off-schedule


def test_step_checkpoints_and_preemption():
  plans = _plans(checkpoint_every_steps=15)
  assert [d for d, p in plans.items() if p.save] == [15, 20, 30, 40, 45, 50, 60, 75, 80, 90, 100]
  stopped = plan_step(7, **SCHEDULE, preempted=True)
  assert stopped == StepPlan(log=True, validate=False, save=True, stop=True)


@pytest.mark.parametrize('done', [10, 50])
def test_epoch_boundaries_only_count_whole_epochs(done):
  plan = plan_step(done + 1, **SCHEDULE)
  assert not plan.validate and not plan.save
