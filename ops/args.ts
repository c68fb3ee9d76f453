// Command-line arguments of the operations scripts (npm run status, npm run client).

/** A mistake in how the command was called: reported with exit code 2. */
export class UsageError extends Error {}

/** The value after `--name`, or undefined when the flag is absent. */
export function argValue(args: string[], name: string): string | undefined {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith("--")) throw new UsageError(`${name} needs a value`);
    return v;
}
