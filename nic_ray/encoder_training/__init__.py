"""Training encoders (VAE, contrastive, BiGAN from slides; multitask from labelled patch sets)
on the Ray Train runtime, and probing them on labelled patches."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "EncoderOptions": "nic_ray.encoder_training.options",
        "train_encoder": "nic_ray.encoder_training.trainer",
        "probe_encoder": "nic_ray.encoder_training.probe",
        "load_patch_set": "nic_ray.encoder_training.patches",
    },
)
