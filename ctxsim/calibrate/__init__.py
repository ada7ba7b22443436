"""Calibration of hardware profiles on the local device, without torch.

``shapes`` defines the layer runs that ``ctxsim calibrate`` times and the held-out ones that
``ctxsim validate`` compares. ``fit`` fits efficiency curves to timed ops, and ``profile`` turns a
fit into a HardwareProfile and writes it atomically. ``validate`` predicts layer times and
summarises the errors. The timing itself, which needs torch, is in ``refmodel.timing``.
"""
