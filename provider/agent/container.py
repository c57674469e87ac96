"""Docker on the node: one container per node for a job's preparation and ranks.

Host network, the node's folders mounted at the same paths, ``--gpus all`` on GPU nodes, the
job's variables from a 0600 env file, ``docker login --password-stdin``. Without an engine the
job fails with FailedStartingContainer naming the node.
"""

import os
import subprocess

try:  # in the control plane: the package airflow_batchai.agent
    from .runtime import JobError
except ImportError:  # on a node: these files lie flat in one folder, the agent script's own (first on sys.path)
    from runtime import JobError  # type: ignore[no-redef]


class Containers:
    """The agent's container steps (a part the Agent holds)."""

    def __init__(self, agent):
        self.agent = agent  # the plan, environment and log it works for
        self.started = False

    def start(self):
        """One container per node for preparation and ranks; fails with FailedStartingContainer naming the node."""
        container = self.agent.plan.container
        node = self.agent.plan.node_id

        def docker(argv, stdin=None):
            try:
                return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800, env=self.agent.env)
            except OSError as error:
                raise JobError("FailedStartingContainer", "no docker command on node %s: %s" % (node, error)) from None

        engine = docker(["docker", "info", "--format", "{{.ServerVersion}}"])
        if engine.returncode != 0:
            raise JobError(
                "FailedStartingContainer", "no Docker engine on node %s: %s" % (node, engine.stderr.decode(errors="replace").strip()[-300:])
            )
        lines = []
        for name, value in sorted(self.agent.job_variables.items()):
            if "\n" in value:
                raise JobError("FailedStartingContainer", "variable %s holds a line break, which docker env files cannot carry" % name)
            lines.append("%s=%s\n" % (name, value))
        descriptor = os.open(container.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.writelines(lines)
        if container.login:
            if not self.agent.registry_password:
                raise JobError("FailedStartingContainer", "registry credentials for %s have no password" % container.image)
            login = docker(container.login, self.agent.registry_password.encode())
            if login.returncode != 0:
                raise JobError("FailedStartingContainer", "docker login for %s failed on node %s" % (container.image, node))
        docker(container.remove)  # a leftover of an earlier attempt of this run
        started = docker(container.start)
        if started.returncode != 0:
            raise JobError(
                "FailedStartingContainer",
                "unable to start docker container from %s on node %s: %s"
                % (container.image, node, started.stderr.decode(errors="replace").strip()[-300:]),
            )
        self.started = True
        self.agent.log("started container %s from %s" % (container.name, container.image))
        for program in self.agent.plan.requires:
            found = docker([*container.exec, container.name, "sh", "-c", "command -v %s" % program])
            if found.returncode != 0:
                raise JobError("JobPreparationFailed", "this job needs %s in image %s, which has none" % (program, container.image))

    def remove(self):
        if self.started:
            container = self.agent.plan.container
            subprocess.run(container.remove, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, env=self.agent.env)
            self.started = False
        env_file = self.agent.plan.container.env_file if self.agent.plan.container else None
        if env_file and os.path.exists(env_file):
            os.unlink(env_file)
