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

/** Every value given with `--name` (a flag that may be repeated), in order. */
export function argValues(args: string[], name: string): string[] {
    const values: string[] = [];
    args.forEach((a, i) => {
        if (a === name) values.push(argValue(args.slice(i), name) as string);
    });
    return values;
}
