"""Real-process harnesses shared by the tests and the benchmarks (never shipped).

The daemon under a stand-in for systemd's notify socket (:mod:`.daemon_process`), the fleet
service as a child process with a fault-injecting proxy (:mod:`.fleet_server`), a loopback
ranking server backed by the shipped teacher (:mod:`.cloud_server`), and a throwaway
PostgreSQL cluster (:mod:`.postgres`). Tests import them from here, and so do benchmarks,
so neither imports the other.
"""
