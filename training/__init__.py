"""Training-side command-line programs: sample data, validation, fitting, reports."""

from needs_rec.native_log import quiet_tensorflow_environment

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature hints) is not for our users; real
# errors still show. Set before anything imports TensorFlow; an explicit setting wins. The lines
# TensorFlow writes before it reads the setting are handled by `needs_rec.native_log`.
quiet_tensorflow_environment()
