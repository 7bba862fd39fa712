# Quickstart: `make run` (set up, then the main job on real data) and `make test` (set up, then the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed

.PHONY: setup data run run-images test test-fast bench clean

# Cache bytecode: with PYTHONDONTWRITEBYTECODE set, every process recompiles torch and Lightning (18 s vs 6 s)
unexport PYTHONDONTWRITEBYTECODE

# uv resolves and installs the pinned stack from PyPI in well under a minute (pip takes ~3.5 min).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	touch $(STAMP)

# Real data from Debian's archive (root + apt-get here and in CI). Each entry is "package:file-it-installs";
# a missing package is installed, a failed install is a warning (the tests that need it say so and skip).
# Elsewhere point the loaders at your own copies (see the README's data section).
FASHION := /usr/share/datasets/fashion-mnist
APT_DATA := dataset-fashion-mnist:$(FASHION)/t10k-labels-idx1-ubyte.gz
# physics: Colin27 T1 + AAL atlas (MRI sim->real), a real head CT (X-ray DRRs)
APT_DATA += mricron-data:/usr/share/mricron/templates/aal.nii.gz
APT_DATA += invesalius-examples:/usr/share/doc/invesalius-examples/examples/Cranium.inv3
# speech: 15 hedgewars voice packs (phrases), Asterisk digit prompts in 6 voices (en, es, fr, it x2, ru)
APT_DATA += hedgewars-data:/usr/share/games/hedgewars/Data/Sounds/voices/Default/Hello.ogg
APT_DATA += asterisk-core-sounds-en-wav:/usr/share/asterisk/sounds/en_US_f_Allison/digits/0.wav
APT_DATA += asterisk-core-sounds-es-wav:/usr/share/asterisk/sounds/es_MX_f_Allison/digits/0.wav
APT_DATA += asterisk-core-sounds-fr-wav:/usr/share/asterisk/sounds/fr_CA_f_June/digits/0.wav
APT_DATA += asterisk-core-sounds-it-wav:/usr/share/asterisk/sounds/it_IT_m_Carlo/digits/0.wav
APT_DATA += asterisk-core-sounds-ru-wav:/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/digits/0.wav
APT_DATA += asterisk-prompt-it-menardi-wav:/usr/share/asterisk/sounds/it_IT_f_Menardi/digits/0.wav
data:
	@missing=""; for entry in $(APT_DATA); do pkg=$${entry%%:*}; file=$${entry#*:}; \
		[ -e "$$file" ] || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
		|| echo "warning: could not install$$missing; runs and tests that need them will be skipped"; \
	else echo "note: real data packages not installed:$$missing (apt-get install them, or see the README)"; fi

setup: $(STAMP) data

# The main job: tabular VAE on 50,000 real NYC flights, synthetic table, TSTR evaluation (~3 min on 2 cores).
# W&B logs offline unless you have credentials; override anything Hydra-style: make run ARGS="trainer.max_epochs=100"
run: $(STAMP)
	$(PY) train.py experiment=flights_tvae $(ARGS)

# Images: a conditional diffusion model on 50 real Fashion-MNIST images per class, real-only vs real+synthetic.
run-images: $(STAMP) data
	$(PY) train.py experiment=fashion_diffusion $(ARGS)

test: $(STAMP) data
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP)
	$(UV) pip install --quiet --python $(PY) -e '.[dev,bench]'
	$(PY) bench/tabular_vae.py

clean:
	rm -rf logs outputs multirun .pytest_cache
