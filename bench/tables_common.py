"""What every docs table says the same way: the machine a result was measured on, a target met or missed."""


def machine(r: dict) -> str:
    m = r["machine"]
    return f"{m['cpus']} CPU cores, Python {m['python']}" + (f", {m['gpu']}" if m.get("gpu") else "")


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def interval(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"
