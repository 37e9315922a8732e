def faulty(x, N):
    return x + 1.0
