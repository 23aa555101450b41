"""The exception types axis_steer raises.

Bad arguments raise the built-in ``TypeError`` (wrong type or dtype) or
``ValueError`` (wrong value, shape or range), each message naming the argument,
its value and what was expected. ``AxisSteerError`` covers what is neither:
a kernel that failed on the device, a model whose structure cannot be
understood, an attachment used out of order.
"""


class AxisSteerError(RuntimeError):
    """A failure inside axis_steer that is not a bad argument."""
