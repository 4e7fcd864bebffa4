"""Where and how the math runs: device and precision, seeding, distributed jobs, the environment report."""
