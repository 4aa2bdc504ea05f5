"""The embedded world: a reach-and-grasp task behind the gymnasium API, and its scripted demonstrators."""
