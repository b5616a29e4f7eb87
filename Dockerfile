# The same environment as on a Debian 12 machine: tools/bootstrap.sh does all of the set-up.
#   docker build -t mrfnet .
#   docker run --rm mrfnet                       # the main job (mrfnet reproduce)
#   docker run --rm mrfnet bash tools/bootstrap.sh test
FROM debian:bookworm

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
WORKDIR /opt/mrfnet
COPY . .
RUN bash tools/bootstrap.sh setup && rm -rf /root/.cache/mrfnet/work /root/.cache/pip
ENV PATH=/opt/mrfnet/.venv/bin:$PATH
CMD ["bash", "tools/bootstrap.sh", "demo"]
