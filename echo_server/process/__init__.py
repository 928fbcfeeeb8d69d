"""Running the process: the CLI, the assembly of the layers (``server``, the only module
that knows them all), the workers' parent and their sibling links, what a reload applies,
the lock file, ``.env``, the log format, the sources' runner and the server's Redis client.
One room so that nothing below it (core, transport, adapters, web, apps) reaches up into it."""
