"""The run: one composed config in, one run folder out (cnnsweep.run.task).

Owns the typed config and its checks (config), data loading (data), the model (model), TensorFlow's
process set-up (hardware), the trainer's types (trainer) and Keras training (training), the run record
(records: metrics.json, history.csv, environment.json and their one reader, RunRecord.read), and what a
job writes for TensorBoard (tensorboard_hparams).

May import: the core modules (cnnsweep.errors, cnnsweep.project, cnnsweep.credentials). Never the
launch, search or review subpackages: everything else builds on the run, never the other way round.
"""
