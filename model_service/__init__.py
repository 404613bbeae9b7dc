"""The example model: seeded synthetic credit-default data with drift scenarios (``data``), and the
training that writes its bundle (``train``). ``mlpulse serve`` serves the bundle like any other."""
