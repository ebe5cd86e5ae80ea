"""`tellme.accel`: the TeLLMe v2 FPGA accelerator (arXiv 2510.15926) in software.

    numerics.py   its datapath's arithmetic, unit by unit (a golden model, bit for bit)
    forward.py    a whole model through that datapath (`AccelEngine`, behind `numerics="tellme-v2"`)
    image.py      the DDR weight image a board loads, and the host's tables; its reader
    design.py     the design's parameters, boards and model shapes, each with its source
    cycles.py     cycles and DDR bytes per unit: TTFT, prefill and decode rates
    resources.py  LUT, FF, DSP, BRAM and URAM per unit
    explore.py    design points within a board's resources, and their Pareto front

docs/accel.md documents each, with every parameter's source.
"""
