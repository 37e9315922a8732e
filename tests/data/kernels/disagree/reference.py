"""Deliberately wrong: no configuration of disagree.c can match it."""


def disagree(x, N):
    return x + 2.0
