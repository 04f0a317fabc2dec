"""Training-side command-line programs: sample data, validation, fitting, reports."""

import os

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature hints) is not for our users; real
# errors still show. Set before anything imports TensorFlow; an explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
