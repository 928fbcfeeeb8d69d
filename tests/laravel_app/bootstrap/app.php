<?php

// Laravel 8 from Debian's php-laravel-framework: its autoloader (on PHP's include_path,
// /usr/share/php) loads the framework and everything it depends on; no Composer, no vendor/.
require_once 'Illuminate/autoload.php';

// This app's own classes: App\Foo\Bar is app/Foo/Bar.php.
spl_autoload_register(function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = __DIR__.'/../app/'.str_replace('\\', '/', substr($class, 4)).'.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

// Everything the app writes (sessions, logs, the framework's caches, the record of
// /broadcasting/auth) goes to APP_STORAGE_PATH, so the source tree stays read-only.
$storage = getenv('APP_STORAGE_PATH') ?: sys_get_temp_dir().'/echo-server-laravel-app';
foreach (['framework/sessions', 'framework/views', 'framework/cache', 'logs'] as $dir) {
    if (! is_dir("$storage/$dir")) {
        @mkdir("$storage/$dir", 0777, true);
    }
}
foreach (['APP_SERVICES_CACHE' => 'services.php', 'APP_PACKAGES_CACHE' => 'packages.php'] as $name => $file) {
    if (getenv($name) === false) {
        putenv("$name=$storage/framework/cache/$file");
    }
}

$app = new Illuminate\Foundation\Application(dirname(__DIR__));
$app->useStoragePath($storage);
$app->singleton(Illuminate\Contracts\Http\Kernel::class, App\Http\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, App\Exceptions\Handler::class);

return $app;
