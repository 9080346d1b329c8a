"""Autoscale: the formula language (the formula package alone) and pools scaling through the official SDK 15."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from batch_emulator import formula
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, vm_config
from tests.stack import wait_for

NOW = dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)  # a Monday


def state(**kw) -> formula.PoolState:
    kw.setdefault("now", NOW)
    return formula.PoolState(**kw)


def run(text: str, **kw) -> formula.Run:
    return formula.evaluate(text, state(**kw))


# ---- the language ------------------------------------------------------------------------------


def test_defaults_and_results_string() -> None:
    r = run("$TargetDedicatedNodes=3")
    assert r.error is None and (r.target_dedicated, r.target_low_priority, r.deallocation) == (3, 0, "requeue")
    assert r.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    # unassigned targets keep the pool's; user variables follow, sorted, with or without $
    r = run("zeta = 2.5; $alpha = 1 + 1;\n$NodeDeallocationOption = taskcompletion", target_dedicated=4)
    assert r.results == (
        "$TargetDedicatedNodes=4;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;$alpha=2;zeta=2.5"
    )
    assert r.to_wire()["timestamp"] == "2026-03-02T14:30:00.000Z" and "error" not in r.to_wire()


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 / 4", 2.5),
        ("-3 + 5", 2),
        ("2 < 3 && 3 <= 3", 1),
        ("2 > 3 || 1 == 2", 0),
        ("!(1 != 1)", 1),
        ("0 ? 5 : 6", 6),
        ("1 >= 2 ? 5 : 2 > 1 ? 7 : 8", 7),
        ("max(1, 9, 4)", 9),
        ("min(3, 2)", 2),
        ("avg(1, 2, 3, 6)", 3),
        ("sum(1, 2, 3)", 6),
        ("len(1, 2, 3)", 3),
        ("abs(-4)", 4),
        ("floor(2.7) + ceil(2.1) + round(2.5)", 7),
        ("range(3, 9, 5)", 6),
        ("lg(8) + log(100) + ln(1)", 5),
        ("TimeInterval_Hour / TimeInterval_Minute", 60),
        ("TimeInterval_Minute * 5 / TimeInterval_Second", 300),
        ("time().hour + time().weekday", 15),  # 14h on a Monday (Sunday is 0)
        ('time("2026-03-01T00:00:00Z") < time() ? 1 : 0', 1),
        ("3 /* a comment */ + 4 // and another", 7),
    ],
)
def test_expressions(expr: str, value: float) -> None:
    r = run(f"$x = {expr};")
    assert r.error is None, r.error
    assert f"$x={value}" in r.results


def test_service_variables() -> None:
    live = formula.metrics(active=4, running=2, succeeded=7, failed=1, usable_nodes=2)
    r = run(
        "$TargetDedicatedNodes = min(3, $PendingTasks);"
        "$TargetLowPriorityNodes = $FailedTasks + $CurrentDedicatedNodes;"
        "$NodeDeallocationOption = retaineddata; s = $SucceededTasks; r = $RunningTasks",
        live=live,
        current_dedicated=2,
    )
    assert (r.target_dedicated, r.target_low_priority, r.deallocation) == (3, 3, "retaineddata")
    assert r.results.endswith("r=2;s=7")
    assert run("$TargetDedicatedNodes = 2.9").target_dedicated == 2  # truncated
    assert run("$TargetDedicatedNodes = -4").target_dedicated == 0


def test_get_sample_on_injected_history() -> None:
    history = formula.History(dt.timedelta(seconds=30))
    for i in range(20):  # 10 minutes of samples, pending growing by one each 30 s; newest now
        history.add(NOW - dt.timedelta(seconds=30 * (19 - i)), formula.metrics(i, 0, 0, 0, 0))
    text = """
        percent = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 2);
        recent = $PendingTasks.GetSample(TimeInterval_Minute * 2);
        last = $PendingTasks.GetSample(1);
        window = $ActiveTasks.GetSample(TimeInterval_Minute * 5, TimeInterval_Minute * 4);
        n = $PendingTasks.Count();
        $TargetDedicatedNodes = percent < 70 ? 1 : max(avg(recent), val(last, 0) / 2)
    """
    r = run(text, history=history)
    assert r.error is None, r.error
    assert r.target_dedicated == 17  # avg(15..19)
    assert "recent=[15,16,17,18,19]" in r.results and "last=[19]" in r.results
    assert "window=[9,10,11]" in r.results and "n=20" in r.results and "percent=100" in r.results
    # too few samples: the documented guard takes the other branch; a demanded percentage fails the run
    short = formula.History(dt.timedelta(seconds=30))
    short.add(NOW, formula.metrics(5, 0, 0, 0, 0))
    guarded = (
        "percent = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 2);"
        "$TargetDedicatedNodes = percent < 70 ? 1 : avg($PendingTasks.GetSample(TimeInterval_Minute * 2))"
    )
    assert run(guarded, history=short).target_dedicated == 1
    assert run(guarded, history=history).target_dedicated == 17
    bad = run("$TargetDedicatedNodes = avg($PendingTasks.GetSample(TimeInterval_Minute * 10, 90))", history=short)
    assert bad.error and bad.error.code == formula.EVALUATION_ERROR and "%" in bad.error.message
    empty = run("v = $PendingTasks.GetSample(1); $TargetDedicatedNodes = 5", target_dedicated=2)
    assert empty.error and "no samples" in empty.error.message and empty.target_dedicated == 2


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("$TargetDedicatedNodes = max(1, 2", 33, "Expected ')'"),
        ("$TargetDedicatedNodes = 1 +* 2", 28, "Expected a value"),
        ("$TargetDedicatedNodes = nosuch(1)", 25, "Unknown function nosuch"),
        ("$PendingTasks = 3", 1, "read-only"),
        ("$a = 1;\n$b = 2 3", 16, "Expected ';'"),
        ("$a = 1 # 2", 8, "Unexpected character"),
        ("something_useless", 18, "Expected '='"),
    ],
)
def test_syntax_errors_carry_position(text: str, position: int, words: str) -> None:
    with pytest.raises(formula.FormulaError) as e:
        formula.check(text)
    assert e.value.code == "AutoScalingFormulaSyntaxError" and e.value.position == position
    assert words in e.value.message and f"position {position}" in e.value.message
    assert run(text).error.code == "AutoScalingFormulaSyntaxError"  # evaluation reports it, never raises


def test_evaluation_errors_and_limits() -> None:
    for text, words in [
        ("$TargetDedicatedNodes = $nope", "$nope is not defined"),
        ("$TargetDedicatedNodes = 1 / 0", "Division by zero"),
        ("$NodeDeallocationOption = 3", "must be one of"),
        ("$TargetDedicatedNodes = TimeInterval_Minute", "must be a number"),
    ]:
        r = run(text, target_dedicated=1)
        assert r.error and r.error.code == formula.EVALUATION_ERROR and words in r.error.message
        assert r.target_dedicated == 1
    assert run("$TargetDedicatedNodes = 2; s = stop(); $TargetDedicatedNodes = 5").target_dedicated == 2
    with pytest.raises(formula.FormulaError) as e:
        formula.check("$a=1;" * 2000)
    assert e.value.code == "AutoScalingFormulaTooLong"
    with pytest.raises(formula.FormulaError):
        formula.check("$a=1;" * 101)


# ---- through SDK 15 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with Emulator(
        data_dir=tmp_path_factory.mktemp("autoscale"),
        boot_seconds=0.05,
        autoscale_min_interval=0.5,
        autoscale_sample_seconds=0.2,
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def fclient(fast: Emulator) -> BatchClient:
    return BatchClient(fast.endpoint, fast.credential())


def autoscale_pool(client: BatchClient, pool_id: str, text: str, interval_s: float = 0.5) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=vm_config(),
            enable_auto_scale=True,
            auto_scale_formula=text,
            auto_scale_evaluation_interval=dt.timedelta(seconds=interval_s),
        )
    )


def test_pool_scales_with_tasks(fclient: BatchClient, uid: str) -> None:
    autoscale_pool(
        fclient, uid, "$TargetDedicatedNodes = min(3, $PendingTasks); $NodeDeallocationOption = taskcompletion;"
    )
    pool = fclient.get_pool(uid)
    assert pool.enable_auto_scale and pool.auto_scale_formula.startswith("$TargetDedicatedNodes")
    assert pool.auto_scale_evaluation_interval == dt.timedelta(seconds=0.5)
    assert pool.auto_scale_run.results.startswith("$TargetDedicatedNodes=0;") and pool.auto_scale_run.error is None
    assert pool.target_dedicated_nodes == 0
    make_job(fclient, uid, uid)
    fclient.create_tasks(uid, [m.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 1.5") for i in range(5)])
    wait_for(lambda: fclient.get_pool(uid).current_dedicated_nodes == 3, timeout=10, what="3 nodes")
    assert fclient.get_pool(uid).target_dedicated_nodes == 3
    wait_for(lambda: all(t.state == "completed" for t in fclient.list_tasks(uid)), timeout=20, what="the tasks to run")
    assert all(t.execution_info.exit_code == 0 for t in fclient.list_tasks(uid))  # taskcompletion: none cut short
    wait_for(lambda: fclient.get_pool(uid).current_dedicated_nodes == 0, timeout=10, what="the pool to shrink")
    pool = fclient.get_pool(uid)
    assert pool.target_dedicated_nodes == 0 and pool.auto_scale_run.timestamp


def test_enable_evaluate_disable(fclient: BatchClient, uid: str) -> None:
    fclient.create_pool(m.BatchPoolCreateOptions(id=uid, vm_size="x", virtual_machine_configuration=vm_config()))
    with pytest.raises(HttpResponseError) as e:  # evaluating needs autoscale enabled
        fclient.evaluate_pool_auto_scale(uid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$a=1"))
    assert e.value.status_code == 409
    wait_for(lambda: fclient.get_pool(uid).allocation_state == "steady", timeout=5, what="steady")
    fclient.enable_pool_auto_scale(
        uid,
        m.BatchPoolEnableAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes=2", auto_scale_evaluation_interval=dt.timedelta(minutes=5)
        ),
    )
    pool = fclient.get_pool(uid)
    assert pool.enable_auto_scale and pool.target_dedicated_nodes == 2
    assert (
        "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
        in pool.auto_scale_run.results
    )
    result = fclient.evaluate_pool_auto_scale(
        uid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes=3")
    )
    assert isinstance(result, m.AutoScaleRun) and result.error is None
    assert result.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert fclient.get_pool(uid).target_dedicated_nodes == 2  # evaluating applies nothing
    bad = fclient.evaluate_pool_auto_scale(
        uid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = max(1,")
    )
    assert bad.error.code == "AutoScalingFormulaSyntaxError" and "position 31" in bad.error.message
    assert bad.results.startswith("$TargetDedicatedNodes=2;")
    with pytest.raises(HttpResponseError) as e:  # an autoscale pool is not resized by hand
        fclient.begin_resize_pool(uid, m.BatchPoolResizeOptions(target_dedicated_nodes=1)).result()
    assert e.value.status_code == 409
    with pytest.raises(HttpResponseError) as e:  # enabling refuses a bad formula
        fclient.enable_pool_auto_scale(uid, m.BatchPoolEnableAutoScaleOptions(auto_scale_formula="$x = (1"))
    assert (e.value.status_code, e.value.error.code) == (400, "AutoScalingFormulaSyntaxError")
    assert "position 8" in e.value.error.message
    fclient.disable_pool_auto_scale(uid)
    pool = fclient.get_pool(uid)
    assert not pool.enable_auto_scale and pool.auto_scale_formula is None and pool.target_dedicated_nodes == 2


def test_create_refusals(fclient: BatchClient, uid: str) -> None:
    def create(**extra) -> HttpResponseError:
        with pytest.raises(HttpResponseError) as e:
            fclient.create_pool(
                m.BatchPoolCreateOptions(id=uid, vm_size="x", virtual_machine_configuration=vm_config(), **extra)
            )
        return e.value

    e = create(enable_auto_scale=True, auto_scale_formula="$TargetDedicatedNodes=1", target_dedicated_nodes=1)
    assert (e.status_code, e.error.code) == (400, "InvalidAutoScalingSettings")
    e = create(auto_scale_formula="$TargetDedicatedNodes=1")
    assert e.error.code == "InvalidAutoScalingSettings"
    assert create(enable_auto_scale=True).error.code == "MissingRequiredProperty"
    e = create(enable_auto_scale=True, auto_scale_formula="$TargetDedicatedNodes=max(")
    assert e.error.code == "AutoScalingFormulaSyntaxError"
    e = create(
        enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes=1",
        auto_scale_evaluation_interval=dt.timedelta(seconds=0.1),  # below the emulator's lowered minimum
    )
    assert (e.status_code, e.error.code) == (400, "InvalidPropertyValue")


def test_service_minimum_interval(client: BatchClient, uid: str) -> None:
    """Without the emulator option, the service's 5 minutes minimum and 15 minutes default hold."""
    options = {"id": uid, "vm_size": "x", "virtual_machine_configuration": vm_config(), "enable_auto_scale": True}
    with pytest.raises(HttpResponseError) as e:
        client.create_pool(
            m.BatchPoolCreateOptions(
                **options, auto_scale_formula="$a=1", auto_scale_evaluation_interval=dt.timedelta(minutes=4)
            )
        )
    assert e.value.error.code == "InvalidPropertyValue"
    client.create_pool(m.BatchPoolCreateOptions(**options, auto_scale_formula="$TargetDedicatedNodes=0"))
    assert client.get_pool(uid).auto_scale_evaluation_interval == dt.timedelta(minutes=15)
