import collections
import importlib.util
from hypothesis.stateful import run_state_machine_as_test

spec = importlib.util.spec_from_file_location("inv", "tests/contracts/test_invariants.py")
import sys
inv = importlib.util.module_from_spec(spec); sys.modules["inv"] = inv; spec.loader.exec_module(inv)
STATS = collections.Counter()

def test_stats(market_chain, deployment, owner, coordinator, outsider, trainers, validators):
    pool = [*validators, trainers[0]]
    for account in [owner, *trainers[:5], *validators]:
        market_chain.tx(account, market_chain.token.functions.approve(market_chain.market.address, 2**256 - 1))
    class Machine(inv.MarketMachine):
        context = {"w3": market_chain.w3, "deployment": deployment, "chain_class": type(market_chain), "owner": owner,
                   "coordinator": coordinator, "outsider": outsider, "trainers": trainers[:5], "validators": pool}
        def attempt(self, account, fn, expected):
            r = super().attempt(account, fn, expected)
            STATS[(fn.fn_name, expected or "ok")] += 1
            return r
    from hypothesis import settings, HealthCheck
    run_state_machine_as_test(Machine, settings=settings(max_examples=20, stateful_step_count=35, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
    for k, v in sorted(STATS.items()): print(k, v)
