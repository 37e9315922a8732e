import agent


def test_public_api_is_pinned():
    # Changing this list is an API change: update the README and the version with it.
    assert agent.__all__ == [
        "BestConfig", "Budget", "ConfigError", "EdgetuneError", "ExpressionError", "HardwareProfile", "KernelNotFound",
        "KernelSpec", "ProbeError", "Problem", "ShapeError", "Space", "SpecError", "Store", "StoreError",
        "ToolchainError", "TuneOptions", "TuneResult", "WorkerError", "best_config", "find_kernel", "load_profile",
        "load_spec", "parse_shape", "probe", "tune",
    ]
    for name in agent.__all__:
        assert getattr(agent, name) is not None


def test_every_error_is_an_edgetune_error():
    errors = [getattr(agent, n) for n in agent.__all__ if n.endswith("Error") or n == "KernelNotFound"]
    assert all(issubclass(e, agent.EdgetuneError) for e in errors)
