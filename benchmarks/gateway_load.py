"""Load test of the FIX gateway on loopback: N broker sessions, open-loop order entry.

(Work in progress: the harness is being written; see benchmarks/README.md, section
"FIX gateway load and end-to-end", for the figures once recorded.)

    python -m benchmarks.gateway_load [--sessions 10] [--rates 5000,10000,20000] [--out DIR]

Starts `ccerx serve` as a subprocess on a free port with a fresh --data-dir and a generated
config of BROKER01..BROKERnn (each with an emitter and a holder account, scrypt-hashed
passwords), or uses --connect HOST:PORT. Sends NewOrderSingle at fixed offered rates, open
loop (latency from each order's planned send time: no coordinated omission), plus a
closed-loop max-rate run; records order-to-acknowledgement latency (first ExecutionReport,
150=0 or 8) in HDR histograms; writes result.json and a latency-spectrum PNG.
"""
