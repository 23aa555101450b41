"""Programs built on the library: the ``axis-steer`` command line
(:mod:`~axis_steer.apps.cli`) and the interactive capped chat with live drift
readings (:mod:`~axis_steer.apps.chat`)."""
