// npm run client -- NAME [--gateway GATEWAY] [--stack NAME | --outputs FILE] [--out DIR]
// A roaming client's ready-to-import config: printed as a QR code in the terminal (scan it
// with the WireGuard app), and written as NAME.conf and NAME.png (both mode 0600). The
// config comes from the stack output clientConfigs, through the Pulumi CLI or a saved
// `pulumi stack output --json --show-secrets` file. With --gateway, the config for one of the
// stack's further gateways (output clientConfigsByGateway), written as NAME-GATEWAY.conf/.png.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as QRCode from "qrcode";
import { argValue, UsageError } from "./args";

function stackOutput<T>(args: string[], output: string): T | undefined {
    const file = argValue(args, "--outputs");
    if (file) {
        if (!fs.existsSync(file)) throw new UsageError(`no outputs file ${file}`);
        return (JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, T>)[output];
    }
    const stack = argValue(args, "--stack");
    const r = spawnSync("pulumi", ["stack", "output", output, "--json", "--show-secrets", ...(stack ? ["--stack", stack] : [])], { encoding: "utf8" });
    if (r.status !== 0) throw new UsageError(`could not read the stack output ${output} (${(r.stderr || String(r.error)).trim()}); pass --stack NAME, or --outputs FILE saved with \`pulumi stack output --json --show-secrets > FILE\``);
    return JSON.parse(r.stdout) as T;
}

/** The client's configs by file name: NAME for the first gateway, NAME-GATEWAY for a further one. */
function clientConfigs(args: string[], gateway: string | undefined): Record<string, string> {
    if (!gateway) return stackOutput<Record<string, string>>(args, "clientConfigs") ?? {};
    const byClient = stackOutput<Record<string, Record<string, string>>>(args, "clientConfigsByGateway") ?? {};
    const gateways = new Set(Object.values(byClient).flatMap((c) => Object.keys(c ?? {})));
    if (!gateways.has(gateway)) throw new UsageError(`no gateway "${gateway}" in clientConfigsByGateway; the further gateways are ${[...gateways].join(", ") || "(none: the stack has one gateway; leave out --gateway)"}`);
    return Object.fromEntries(Object.entries(byClient).map(([client, configs]) => [client, configs[gateway]]));
}

export async function main(args: string[]): Promise<number> {
    try {
        const name = args.find((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"));
        if (!name) throw new UsageError("name the client: npm run client -- phone [--stack dev | --outputs outputs.json] [--out DIR]");
        const gateway = argValue(args, "--gateway");
        const configs = clientConfigs(args, gateway);
        const config = configs[name];
        if (!config) throw new UsageError(`no client "${name}" in clientConfigs; the clients are ${Object.keys(configs).join(", ") || "(none: add one under peers)"}`);
        const out = argValue(args, "--out") ?? ".";
        fs.mkdirSync(out, { recursive: true });
        const file = gateway ? `${name}-${gateway}` : name;
        const confFile = path.join(out, `${file}.conf`);
        const pngFile = path.join(out, `${file}.png`);
        // Created 0600 from the start (an older file is replaced, not reused): they may hold a private key.
        const writePrivate = (file: string, data: string | Buffer) => {
            fs.rmSync(file, { force: true });
            fs.writeFileSync(file, data, { mode: 0o600, flag: "wx" });
        };
        writePrivate(confFile, config);
        writePrivate(pngFile, await QRCode.toBuffer(config, { type: "png", errorCorrectionLevel: "M", margin: 4, scale: 6 }));
        console.log(await QRCode.toString(config, { type: "terminal", small: true, errorCorrectionLevel: "M" }));
        const secret = !/PrivateKey = </.test(config);
        console.log(`${confFile} and ${pngFile} written (mode 0600).${secret ? " They hold the client's private key: import them, then delete them." : " Put the device's own private key where the placeholder is."}`);
        return 0;
    } catch (e) {
        if (e instanceof UsageError) {
            console.error(`client: ${e.message}`);
            return 2;
        }
        throw e;
    }
}

if (require.main === module) main(process.argv.slice(2)).then((code) => process.exit(code));
