"""A command tool in Python: the tool input arrives as JSON on stdin, the
answer leaves as {"status", "content"} JSON on stdout. Runs in the sandbox
(no network, its own workspace, resource limits)."""
import json
import os
import statistics
import sys


def main():
    numbers = json.load(sys.stdin)["numbers"]
    digits = int(os.environ.get("STATS_PRECISION", "6"))
    result = {
        "count": len(numbers),
        "mean": round(statistics.fmean(numbers), digits),
        "median": round(statistics.median(numbers), digits),
        "stdev": round(statistics.pstdev(numbers), digits),
        "min": min(numbers),
        "max": max(numbers),
    }
    json.dump({"status": "success", "content": json.dumps(result)}, sys.stdout)


if __name__ == "__main__":
    main()
