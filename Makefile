# retouch — set-up and common tasks. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in the same pip command as everything else: unpinned, pip would pick a CUDA build.
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
NETNS ?= ../shared/tools/netns-run

.PHONY: setup test demo lint clean bench bench-extra compare browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e ".[test,ui,cluster]"
	@# spandrel (model upscalers, as A1111 1.10 pins it) declares torchvision, which is never installed here:
	@# --no-deps, and retouch imports it under a stand-in (retouch.upscalers.spandrel_models)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "spandrel==0.3.4" "einops>=0.7"
	touch $(STAMP)

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)
	@# the cluster tests start Ray: only inside netns-run's private, loopback-only network namespace
	@if [ -x "$(NETNS)" ]; then $(NETNS) $(PY) -m pytest -q tests/cluster; \
	 else echo "tests/cluster skipped: $(NETNS) not found (they start Ray only inside it)"; fi

# The web UI tests drive Debian's Chromium (never a downloaded browser): installed here when missing.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ echo "installing Debian's chromium for the web UI tests"; \
		  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }

demo: $(STAMP)
	$(PY) -m retouch img2img assets/demo.png --prompt "a watercolor painting of a forest" \
		--negative-prompt "blurry" --width 256 --height 256 --steps 20 --denoising-strength 0.65 \
		--sampler-name "Euler a" --seed 1234 -o outputs

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs .pytest_cache

bench: $(STAMP)
	$(PY) bench/run.py

# the 2048² img2img on the SD1.5-sized model, the inpainting comparison with diffusers, a 1,000-request
# soak, the SDXL-sized comparison with diffusers and the SD-upscale / ESRGAN 4096² runs (~90 min here); their
# tables join docs/benchmarks.md
bench-extra: $(STAMP)
	$(PY) bench/run.py --sections large,inpaint,soak,sdxl,scripts,compile,fastest,tome

# did a change make anything slower? BEFORE/AFTER are git revisions, e.g. make compare BEFORE=HEAD~3 AFTER=HEAD
compare: $(STAMP)
	$(PY) bench/compare.py $(BEFORE) $(AFTER) --overhead
