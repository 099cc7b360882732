"""Per-group fractions from sensitivity curves: spend a MACs budget where it costs least.

For each prunable group alone (the others intact), the model is built with
a quarter, a half and three quarters of that group's channels removed and
its accuracy measured on held-out data: a sensitivity curve per group.
Starting from nothing removed, the allocation then takes, again and again,
the step (one group, one level further) that loses the least accuracy per
MAC saved, until the model fits `macs_target`. Robust groups give up many
channels, fragile ones few (the channel-level form of the per-layer targets
that unstructured pruning's `layer_targets: auto` derives).
"""

import numpy as np

LEVELS = (0.25, 0.5, 0.75)


def sensitivity_fractions(model, graph, groups, scores, config, data, base, before, choose, macs_after, build):
    """Chooses one removal fraction per prunable group so that the MACs fit `config.macs_target`.

    Args:
        model: the model being planned.
        graph, groups, scores: as `plan_channels` reads them.
        config: the `ChannelPruneConfig` (its `macs_target` is the budget).
        data: `(x, y)` held-out samples with integer labels.
        base, before: per-layer MACs and the model's total.
        choose, macs_after, build: `plan_channels`'s helpers (kept there).

    Returns:
        `(fractions, curves)`: `{id(group dim): fraction}` and, per group
        name, `[(fraction, accuracy)]`.

    Raises:
        ValueError: if even the largest level of every group misses the budget.
    """
    from keras_compress import evaluate

    x, y = data
    reference = evaluate.keras_accuracy(model, x, y)
    prunable = [g for g in groups if g.prunable]
    curves, drop = {}, {}
    for group in prunable:
        curve = [(0.0, reference)]
        for level in LEVELS:
            keep = choose([group], scores, level, config)
            if not keep:
                continue
            accuracy = evaluate.keras_accuracy(build(keep), x, y)
            curve.append((level, accuracy))
        curves[group.name] = curve
        drop[id(group.dim)] = {level: reference - accuracy for level, accuracy in curve}
    fractions = {id(g.dim): 0.0 for g in prunable}
    target = config.macs_target * before
    current = macs_after(graph, choose(groups, scores, fractions, config), base)
    while current > target:
        best = None
        for group in prunable:
            key = id(group.dim)
            levels = sorted(drop[key])
            position = levels.index(fractions[key])
            if position + 1 >= len(levels):
                continue
            trial = dict(fractions)
            trial[key] = levels[position + 1]
            trial_macs = macs_after(graph, choose(groups, scores, trial, config), base)
            saved = current - trial_macs
            if saved <= 0:
                continue
            cost = max(drop[key][trial[key]] - drop[key][fractions[key]], 0.0) + 1e-9
            if best is None or cost / saved < best[0]:
                best = (cost / saved, trial, trial_macs)
        if best is None:
            raise ValueError(
                f"macs_target={config.macs_target} cannot be met: with every prunable group at "
                f"{max(LEVELS):.0%} removed the model keeps {current / before:.1%} of its MACs")
        _, fractions, current = best
    return fractions, {name: [(float(f), float(a)) for f, a in curve] for name, curve in curves.items()}
