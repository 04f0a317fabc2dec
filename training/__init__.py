"""Training-side command-line programs: sample data, validation, fitting, reports."""
