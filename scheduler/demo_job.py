"""The demo's stand-in workload: what `make demo` runs for each job on the `local` provider.

The example jobs are plans (hundreds of GPU-hours), not programs; the demo gives each this
command, which prints a few training-like progress lines over `DEMO_SECONDS` and exits 0.
Set `DEMO_EXIT_CODE` to make it fail (the demo's failure scenario).
"""

import os
import sys
import time


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "3"))
    steps = 5
    job = os.environ.get("CLOUDSCHED_JOB_ID", "?")
    print(f"job {job}: {os.environ.get('CLOUDSCHED_GPUS', '?')} GPUs, "
          f"{os.environ.get('CLOUDSCHED_RUN_HOURS', '?')} planned hours, running {seconds:.0f} s here", flush=True)
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        print(f"step {step}/{steps} loss {2.0 / step:.3f}", flush=True)
    return int(os.environ.get("DEMO_EXIT_CODE", "0"))


if __name__ == "__main__":
    sys.exit(main())
