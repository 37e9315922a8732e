def spin(x, N):
    return 2.0 * x
