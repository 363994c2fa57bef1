# make demo  - install what is needed, start a local S3 endpoint, replicate a sample disk
# make test  - install what is needed, run sanity, lint, unit and integration tests
# make bench - measure the data path against the naive way and the physical bounds
.PHONY: bootstrap demo demo-stop test sanity lint unit integration bench clean

bootstrap:
	bash hack/bootstrap.sh

demo: bootstrap
	bash hack/demo.sh

demo-stop:
	bash hack/demo.sh stop

test: bootstrap
	bash hack/test.sh

sanity: bootstrap
	bash hack/test.sh sanity

lint: bootstrap
	bash hack/test.sh lint

unit: bootstrap
	bash hack/test.sh unit

integration: bootstrap
	bash hack/test.sh integration

bench: bootstrap
	.venv/bin/python bench/run.py

clean:
	bash hack/demo.sh stop || true
	rm -rf .build .demo .pytest_cache
