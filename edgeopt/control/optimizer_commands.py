"""The optimizer's control commands: optimize, evaluate, strategy, stats, history, recommendations.

Each answers `unavailable` in a daemon whose optimizer is off. The ones that
change the plan are admin-only (`writes`), as the README's table says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeopt.control.server import ControlError, ControlServer, Peer

if TYPE_CHECKING:
    from edgeopt.optimizer import Optimizer

__all__ = ["register_optimizer"]


def register_optimizer(
    server: ControlServer,
    optimizer: Callable[[], Optimizer | None],
    plan_changed: Callable[[], None],
) -> None:
    """Register the optimizer's commands.

    optimizer: the daemon's optimizer now (None when it is off).
    plan_changed: called after a command that may have changed the read plan.
    """

    def need() -> Optimizer:
        found = optimizer()
        if found is None:
            raise ControlError("unavailable", "the optimizer is not running in this daemon")
        return found

    async def optimize(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        running = need()
        mode = args.get("mode")
        if mode == "quick":
            result = await running.run_quick_optimization()
        elif mode == "full":
            result = await running.run_full_optimization()
        else:
            raise ControlError("invalid_args", "mode must be quick or full")
        plan_changed()
        return result

    async def evaluate(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        result = await need().evaluate_optimizations(force=True)
        plan_changed()
        return result

    async def strategy(args: dict[str, Any], peer: Peer) -> Any:
        running = need()
        action, name = args.get("action", "list"), args.get("name")
        if action == "list":
            return running.strategy_list()
        if not isinstance(name, str) or name not in running.strategies:
            known = ", ".join(sorted(running.strategies))
            raise ControlError("not_found", f"no strategy named {name!r}; known: {known}")
        if action in ("enable", "disable"):
            return await running.set_strategy_enabled(name, action == "enable")
        if action == "set":
            params = args.get("params")
            if not isinstance(params, dict) or not params:
                raise ControlError("invalid_args", "set needs KEY=VALUE parameters")
            try:
                return await running.update_strategy_parameters(name, **params)
            except (KeyError, TypeError, ValueError) as exc:
                raise ControlError("invalid_args", str(exc)) from None
        raise ControlError("invalid_args", "action must be list, set, enable or disable")

    async def stats(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return need().get_statistics()

    async def history(args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        limit = args.get("limit", 20)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ControlError("invalid_args", "limit must be a positive integer")
        return need().history(limit)

    async def recommendations(args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return need().recommendations()

    server.command("optimize", optimize, writes=True)
    server.command("evaluate", evaluate, writes=True)
    # `strategy list` only reads: open to anyone who can connect, as the README says.
    server.command("strategy", strategy, writes=lambda a: a.get("action", "list") != "list")
    server.command("stats", stats)
    server.command("history", history)
    server.command("recommendations", recommendations)
