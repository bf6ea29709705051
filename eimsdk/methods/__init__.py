"""Model-agnostic methods: direction finders (HSDS and baselines) and manipulators."""
