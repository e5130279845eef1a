# syntax=docker/dockerfile:1.7
# The API image with one exported model baked in: what deploy/cloudrun/service.yaml runs. The build context is
# the export folder (model.onnx + model.json), so nothing else can slip in:
#
#   docker build -f deploy/cloudrun/model.dockerfile --build-arg API_IMAGE=<repository>/api:<tag> \
#       -t <repository>/api-model:<model version> models/
#
# One layer of a few MB on top of the API image: a new model is a new image and a new Cloud Run revision, so
# a rollback is a revision switch. docs/deploy.md compares this with mounting the model from Cloud Storage.
ARG API_IMAGE=pokedex-api:0.1.0
FROM ${API_IMAGE}
COPY --chown=10001:10001 model.onnx model.json /app/models/
