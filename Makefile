# The project's checks, in the order CI runs them (`make test`), and the README generator.
SHELL := /bin/bash
.PHONY: test clean-check export-check style-check readme readme-check docs nbtest nbexec pytest demo

test: clean-check export-check style-check readme-check docs nbtest nbexec pytest

clean-check:  ## notebooks are clean: nbdev_clean leaves no diff
	nbdev_clean
	@git status --porcelain -- nbs | (! grep .) || (echo "nbdev_clean changed the notebooks above: run nbdev_clean and commit"; exit 1)

export-check:  ## the library is in sync with the notebooks
	nbdev_export
	@git status --porcelain -- searle | (! grep .) || (echo "nbdev_export changed searle/ above: export and commit"; exit 1)

style-check:  ## exported lines <= 100 characters; exported cells <= 25 lines, at most 10 longer with a reason
	python .ci/style_check.py

readme:  ## README.md from nbs/index.ipynb, offline (no Quarto)
	python .ci/make_readme.py

readme-check:
	python .ci/make_readme.py --check

docs:  ## the site in _docs/, offline: nbdev's processing, then Sphinx (tests/test_site.py opens it)
	python docs/build.py

nbtest:  ## every notebook executes (cuda / data / slow cells skipped)
	OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing

nbexec:  ## every notebook runs top to bottom under jupyter nbconvert --execute, as in Jupyter or Colab (90_reproduce aside)
	python .ci/execute_notebooks.py

pytest:
	python -m pytest tests -q -p no:cacheprovider
