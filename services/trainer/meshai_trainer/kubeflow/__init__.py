"""Training on Kubernetes as Kubeflow Trainer (v2) TrainJobs (MESHAI_TRAIN_BACKEND=kubeflow).

The trainer service stays a CPU-only controller: `trainjob` renders a TrainJob for a TrainRequest,
`controller` creates it, watches it, relays rank 0's progress from the bucket and deletes it on Cancel;
`podjob` is what the TrainJob's ranks run (`torchrun -m meshai_trainer.cli train job ...`), and `status` is
the small object in the bucket through which rank 0 reports to the controller.
"""
