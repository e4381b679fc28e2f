"""The tier again under ThreadSanitizer (data races between a block's threads: a missing
__syncthreads) and AddressSanitizer + UBSan alignment (out-of-bounds loads and stores, misaligned
vector accesses), each in a child pytest with the sanitizer runtime preloaded. A sanitizer report
fails the test and is shown in full."""
import pytest

from . import sanitize

# A subset, to fit CI's budget (the full tier: `python -m tests.cuda_emu.sanitize thread|address`).
# ThreadSanitizer: every kernel with a block reduction or warp shuffles (penalty forward in two
# dtypes and every reduction, spectral norm's power iteration and both backward kernels).
# AddressSanitizer: every kernel's bounds and alignment paths (vector and scalar, chunk and table
# edges, misaligned views, layouts).
SELECT = {
    "thread": ["-k", "(test_matches_float64 and (float32 or float64)) or test_reductions or test_many_rows"
                     " or (test_power_and_normalize and float32) or test_normalize_many_partials"
                     " or test_long_rows"],
    "address": ["-k", "test_matches_float64 or test_layouts or test_misaligned or test_sizes_around_chunks"
                      " or test_lists_match_eager or test_table_full or test_bounds_nan_inf"
                      " or test_power_and_normalize or test_more_layers or test_normalize_many_partials"],
}


@pytest.mark.parametrize("kind", ["thread", "address"])
def test_tier_under_sanitizer(kind):
    status, reports, res = sanitize.run(kind, SELECT[kind], capture_output=True, text=True, timeout=1500)
    assert status == 0, f"{kind} sanitizer:\n{reports[-12000:]}\n--- pytest:\n{res.stdout[-4000:]}{res.stderr[-2000:]}"
