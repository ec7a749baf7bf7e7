"""`pipeline_fn(prompt, input) -> AgentTrace` (agents not written in DSPy) as a one-predictor DSPy program.

The reference's contract: the user wraps their agent in a function that takes the prompt under
optimization and one input, runs the whole agent, and returns its `AgentTrace`. Here that
function becomes a `dspy.Module` whose single predictor `prompt` holds the prompt as its
instructions (and demos), so every strategy, candidates, resume and `program.json` work
unchanged: a candidate edits the predictor, and each call renders it (instructions, then demos
under `Examples:`, as `PredictorState.render()` does) into the text handed to `pipeline_fn`.
The predictor itself never calls a model; the trace's final answer becomes the prediction's
`output` and its nodes the example's execution trace.

Per-sample timeouts (`timeout=` seconds) must really stop a hung agent, and a Python thread
cannot be stopped; so with a timeout each call runs in a child worker process, which is killed
and replaced when it overruns. The example then fails with "timed out after Ns" (never 0, and
not retried). Without a timeout, calls run in the evaluator's threads.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy

from reflex_dspy.candidate import PredictorState
from reflex_dspy.errors import ReflexError
from reflex_dspy.retries import report
from reflex_dspy.trace import PREDICTION_TRACE_ATTR, AgentTrace, plain

PIPELINE_SIGNATURE = "input -> output"
STARTUP_SECONDS = (
    120.0  # importing the user's file in a fresh worker (a model may load): not the sample's time
)

# How a worker finds the function: ("file", path, name) imports the user's file by path;
# ("object", fn) unpickles a module-level function by reference (`ref_for` picks one).
FunctionRef = tuple[Any, ...]


class PipelineFnError(ReflexError):
    """pipeline_fn failed, returned something other than an AgentTrace, or its worker died.

    An error in a worker process reaches here as text; `reported` carries what `retries.report`
    made of the original there (a provider's rate limit is retried, a context overflow is no answer).
    """

    def __init__(self, message: str, reported: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reported = reported


class SampleTimedOut(ReflexError):
    """A pipeline call overran the per-sample timeout and was stopped.

    Deliberately not a `TimeoutError` and not named "...Timeout": the evaluator retries those as
    transient provider errors, and a hung agent must fail once, not five times.
    """


def checked_trace(value: Any, name: str = "pipeline_fn") -> AgentTrace:
    """`value` if it is an AgentTrace; otherwise the error that says what came back instead."""
    if isinstance(value, AgentTrace):
        return value
    raise PipelineFnError(f"{name} must return reflex_dspy.AgentTrace, got {type(value).__name__}")


# --------------------------------------------------------------------------- worker processes


def ref_for(fn: Callable[..., Any]) -> FunctionRef:
    """How a worker process finds `fn`: by module and name, or by file for a function of the main script."""
    module = getattr(fn, "__module__", None)
    main = sys.modules.get("__main__")
    if module == "__main__" and getattr(main, "__file__", None):
        return ("file", str(Path(main.__file__).resolve()), fn.__name__)  # the script is imported, not run
    return ("object", fn)


def _resolve(ref: FunctionRef) -> Callable[..., Any]:
    if ref[0] == "file":
        from reflex_dspy.adapters.pyfile import import_file

        return getattr(import_file(ref[1]), ref[2])
    return ref[1]


def worker_main(read_fd: int, write_fd: int) -> None:
    """A worker process: import the function once, then answer (prompt, input) requests until told to stop.

    Started as `python -c` (not by multiprocessing), so the parent's main script never runs again
    here. What the agent prints goes to stderr: stdout is not the channel, but keep it clean anyway.
    """
    from multiprocessing.connection import Connection

    requests, replies = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    os.dup2(2, 1)
    try:
        path, ref = requests.recv()
        sys.path[:] = path  # the parent's import path: its modules import here too
        fn = _resolve(ref)
    except BaseException as exc:  # reported to the parent, which fails the sample with it
        replies.send(("fatal", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        return
    replies.send(("ready",))
    while True:
        try:
            request = requests.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if request is None:
            return
        prompt, value = request
        try:
            with dspy.track_usage() as tracker:  # an agent's DSPy model calls, counted like the evaluator's
                out = fn(prompt, value)
            usage = {lm: [dict(e) for e in entries] for lm, entries in tracker.usage_data.items()}
            replies.send(("ok", checked_trace(out).to_dict(), usage))
        except BaseException as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            line = f" (line {where[0].lineno} of {Path(where[0].filename).name})" if where else ""
            replies.send(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}{line}",
                          report(exc)))


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self, ref: FunctionRef) -> None:
        from multiprocessing.connection import Connection

        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        entry = "from reflex_dspy.adapters.pipeline_fn import worker_main"
        code = f"{entry}; worker_main({from_parent}, {to_parent})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL
        )
        os.close(from_parent)
        os.close(to_parent)
        self.requests = Connection(to_child, readable=False)
        self.replies = Connection(from_child, writable=False)
        try:
            self.requests.send((list(sys.path), ref))
            if not self.replies.poll(STARTUP_SECONDS):
                raise PipelineFnError(f"the pipeline worker did not start within {STARTUP_SECONDS:g}s")
            reply = self.replies.recv()
        except (EOFError, OSError):
            self.kill()
            raise PipelineFnError(
                f"the pipeline worker exited while starting (code {self.process.poll()})"
            ) from None
        except BaseException:
            self.kill()
            raise
        if reply[0] != "ready":
            self.kill()
            raise PipelineFnError(f"the pipeline worker could not load the function: {reply[1]}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.replies.closed

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        self.requests.close()
        self.replies.close()


class WorkerPool:
    """Up to `size` worker processes running one function; a call that overruns `timeout` kills its worker.

    Workers start on demand (a fresh one replaces a killed one on the next call) and are
    stopped by `close()` or at interpreter exit. `deepcopy` returns the pool itself, so every
    candidate program copied from one student shares it.
    """

    def __init__(self, ref: FunctionRef, *, timeout: float, size: int = 1) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.ref = ref
        self.timeout = timeout
        self.size = max(1, size)
        self._idle: list[_Worker] = []
        self._live = 0  # workers started and not stopped, idle or busy
        self._ready = threading.Condition()
        self.killed = 0  # workers stopped for overrunning the timeout
        atexit.register(self.close)

    def __deepcopy__(self, memo: dict) -> WorkerPool:
        return self

    def _acquire(self) -> _Worker:
        """An idle worker, else a new one while fewer than `size` live, else wait for either."""
        with self._ready:
            while not self._idle and self._live >= self.size:
                self._ready.wait()
            if self._idle:
                return self._idle.pop()
            self._live += 1
        try:
            return _Worker(self.ref)
        except BaseException:
            self._stopped()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._ready:
            self._idle.append(worker)
            self._ready.notify()

    def _stopped(self) -> None:
        with self._ready:
            self._live -= 1
            self._ready.notify()  # a waiting caller may start a replacement

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._stopped()

    def __call__(self, prompt: str, value: Any) -> tuple[AgentTrace, dict[str, list[dict[str, Any]]]]:
        worker = self._acquire()
        try:
            worker.requests.send((prompt, value))
            if not worker.replies.poll(self.timeout):
                self._discard(worker)
                with self._ready:
                    self.killed += 1
                raise SampleTimedOut(f"timed out after {self.timeout:g}s: the pipeline call was stopped")
            reply = worker.replies.recv()
        except (EOFError, OSError):
            code = worker.process.poll()
            self._discard(worker)
            raise PipelineFnError(f"the pipeline worker process exited (code {code})") from None
        except BaseException:
            if worker.alive:
                self._release(worker)
            raise
        self._release(worker)
        if reply[0] == "ok":
            return AgentTrace.from_dict(reply[1]), reply[2]
        raise PipelineFnError(*reply[1:])

    def close(self) -> None:
        """Stop every idle worker (a worker busy in another thread is stopped when it comes back)."""
        with self._ready:
            idle, self._idle = self._idle, []
        for worker in idle:
            self._discard(worker)  # idle: nothing is lost by stopping it now


class _InThread:
    """Calls the function in the caller's thread (no timeout); shared, not copied, by deepcopy."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __deepcopy__(self, memo: dict) -> _InThread:
        return self

    def __call__(self, prompt: str, value: Any) -> tuple[AgentTrace, dict[str, list[dict[str, Any]]]]:
        return checked_trace(self.fn(prompt, value)), {}

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the program


class PipelineFnProgram(dspy.Module):
    """`pipeline_fn(prompt, input) -> AgentTrace` as a DSPy program: `forward(input) -> Prediction(output=)`.

    `prompt` is the initial prompt (the predictor `prompt`'s instructions). With `timeout`
    seconds, calls run in up to `workers` child processes and an overrunning call is stopped;
    those processes import `ref` (default: the function itself, by reference, so it must be a
    module-level function; `("file", path, "pipeline_fn")` imports a file by path).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        prompt: str,
        *,
        timeout: float | None = None,
        workers: int = 1,
        ref: FunctionRef | None = None,
    ) -> None:
        super().__init__()
        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty")
        self.prompt = dspy.Predict(dspy.Signature(PIPELINE_SIGNATURE).with_instructions(prompt.strip()))
        self.runner = (
            WorkerPool(ref or ref_for(fn), timeout=timeout, size=workers) if timeout else _InThread(fn)
        )

    def rendered_prompt(self) -> str:
        """The text pipeline_fn receives: the instructions, then the demos (as a prompt file shows them)."""
        demos = tuple(plain(d) for d in (self.prompt.demos or []))
        return PredictorState(self.prompt.signature.instructions, demos).render()

    def forward(self, input: Any) -> dspy.Prediction:
        trace, usage = self.runner(self.rendered_prompt(), input)
        tracker = dspy.settings.usage_tracker
        if tracker is not None:  # model calls a worker process made, reported back to our accounting
            for lm, entries in usage.items():
                for entry in entries:
                    tracker.add_usage(lm, entry)
        final = trace.final_answer
        prediction = dspy.Prediction(output=final if isinstance(final, str) else _text(final))
        setattr(prediction, PREDICTION_TRACE_ATTR, trace)  # a private attribute, not an output field
        if dspy.settings.trace is not None:
            # The optimized node's inputs and outputs are this predictor's step: fewshot's demos come from it.
            node = next((n for n in trace.nodes if n.optimize), None)
            inputs = dict(node.inputs) if node else {"input": input}
            outputs = dict(node.outputs) if node else {"output": prediction.output}
            dspy.settings.trace.append((self.prompt, inputs, dspy.Prediction(**outputs)))
        return prediction

    def close(self) -> None:
        """Stop the worker processes (they also stop at interpreter exit)."""
        self.runner.close()


def _text(value: Any) -> str:
    """A non-text final answer as the JSON text a metric compares (None as empty)."""
    return json.dumps(plain(value), ensure_ascii=False) if value is not None else ""
