"""MQTT load generator for the lastwill-vs-mosquitto benchmark: one process, one core, uvloop.

It speaks just enough MQTT (3.1.1 by default, 5.0 with ``--mqtt 5``) to drive a broker hard:
packets are pre-encoded once (QoS 0 PUBLISHes are written as a blob of many packets per write),
and incoming packets are counted by walking the fixed header and Remaining Length only; nothing
is decoded except what a scenario needs (the packet id of a QoS 1 PUBLISH to ack it, the topic
of a will). It does not import lastwill, so it measures both brokers the same way.

One scenario per run; the result is one JSON object on stdout::

    python benchmarks/loadgen fanin_qos0 --port 1883 --duration 3 --warmup 1 [--broker-pid PID]

Scenarios (see benchmarks/README.md): fanin_qos0, fanout_qos0, fanin_qos1, fanin_qos1_persistent,
latency_qos1, connect_rate, connect_hold, will_punctuality, will_under_load, delayed_will,
wills_drop_qos1. Throughput is counted at the subscriber(s) over ``--duration`` seconds that
start after ``--warmup`` seconds of traffic. The process's own CPU use over the same window
(getrusage) is reported as ``loadgen_cpu_pct`` (100 = one core busy: the load generator may be
the bottleneck), and with ``--broker-pid`` the broker's CPU use from /proc as ``broker_cpu_pct``.

Every scenario stops by itself: traffic runs for warmup + duration and the whole run has a hard
timeout. All traffic goes to 127.0.0.1.

The modules: ``wire`` (the MQTT bytes), ``clients`` (the asyncio connections and their shared
counters), ``kernelstamp`` (reads with the kernel's receive time), ``rawconns`` (thousands of raw
connections, dropped at once), ``probes`` (CPU, RSS and run-queue readings over a window),
``stats`` (percentiles), ``traffic`` (the pumps and the measuring window), ``scenarios`` (one
module per scenario) and ``cli`` (the command line). Other scripts import it with ``benchmarks/``
on ``sys.path`` (``from loadgen.wire import connect_packet``, as curves.py does).
"""
