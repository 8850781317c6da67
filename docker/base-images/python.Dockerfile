# Python 3.11 from Debian packages, in place of python:3.11-slim (docker/base-images/build.sh).
ARG DEBIAN_IMAGE=nextbuy-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
# ca-certificates also trusts the host CAs build.sh put in /usr/local/share/ca-certificates.
# The project image expects the official image's layout: python3.11 and pip on PATH under
# /usr/local/bin, and pip allowed to install (no EXTERNALLY-MANAGED: this is a base image).
RUN apt-get update \
 && apt-get install -y python3.11 python3.11-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11 \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
