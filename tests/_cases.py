"""Seeded random cases for property tests: the small part of hypothesis's API that
tests/test_contract_property.py uses (``@given(st.data())``, ``data.draw``, ``st.integers``,
``st.sampled_from``, ``st.booleans``, ``st.lists``, ``st.composite``, ``settings``), without the
dependency. No shrinking: a failure names the seed of its case, and ``FASTGAN_PROPERTY_SEED=<seed>
FASTGAN_PROPERTY_EXAMPLES=1`` replays it.

Cases are the same on every run (seeds 0, 1, ...) unless ``FASTGAN_PROPERTY_RANDOM=1``.
"""
import os
import random
import types


class _Strategy:
    def __init__(self, fn):
        self._fn = fn

    def draw(self, rng):
        return self._fn(rng)


def integers(lo, hi):
    return _Strategy(lambda r: r.randint(lo, hi))


def sampled_from(values):
    values = list(values)
    return _Strategy(lambda r: values[r.randrange(len(values))])


def booleans():
    return _Strategy(lambda r: r.random() < 0.5)


def lists(elements, min_size=0, max_size=3):
    return _Strategy(lambda r: [elements.draw(r) for _ in range(r.randint(min_size, max_size))])


def composite(fn):
    """``fn(draw, *args, **kw)`` -> a function returning a strategy, as in hypothesis."""
    def make(*args, **kw):
        return _Strategy(lambda r: fn(lambda s: s.draw(r), *args, **kw))
    return make


class _Data:
    def __init__(self, rng):
        self._rng = rng

    def draw(self, strategy):
        return strategy.draw(self._rng)


def data():
    return "data"


st = types.SimpleNamespace(integers=integers, sampled_from=sampled_from, booleans=booleans, lists=lists,
                           composite=composite, data=data)


def settings(max_examples=40, **_ignored):
    def deco(test):
        test._examples = max_examples
        return test
    return deco


def given(_data):
    """The test runs once per case with a ``data`` object; pytest sees a function without arguments."""
    def deco(fn):
        def test():
            n = getattr(test, "_examples", 40)
            first = int(os.environ.get("FASTGAN_PROPERTY_SEED", "0"))
            if os.environ.get("FASTGAN_PROPERTY_RANDOM") == "1":
                first = random.SystemRandom().randrange(2**31)
            for seed in range(first, first + n):
                try:
                    fn(_Data(random.Random(seed)))
                except BaseException as e:
                    e.add_note(f"property case: FASTGAN_PROPERTY_SEED={seed} FASTGAN_PROPERTY_EXAMPLES=1 replays it")
                    raise
        test.__name__, test.__qualname__, test.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        test.__module__ = fn.__module__
        return test
    return deco
